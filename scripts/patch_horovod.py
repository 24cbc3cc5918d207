"""Source patches applied to the Horovod 0.28.1 sdist before it is built (see scripts/setup.sh).

Each patch replaces one exact passage and fails loudly when the passage is missing, so that a new
Horovod version cannot be patched half-way by accident."""

from __future__ import annotations

import sys
from pathlib import Path

TASK_SERVICE_MARKER = "# seglib patch: minimum command lifetime counted from the command's start"
RSH_MARKER = "# seglib patch: exit code polled every 0.1 s"

# horovod.spark's task service must stay up a few seconds after starting the rank process, so that
# the driver can connect and wait for its exit code. 0.28.1 starts that timer only once the command
# has *finished* (the base `_run_command` blocks until the process exits), so every
# `horovod.spark.run` sleeps 3 s after training instead of at most 3 s after the start.
TASK_SERVICE_BEFORE = """        super(SparkTaskService, self)._run_command(command, env, event,
                                                   stdout, stderr, index,
                                                   prefix_output_with_timestamp)

        if self._minimum_command_lifetime_s is not None:
            self._minimum_command_lifetime = timeout.Timeout(self._minimum_command_lifetime_s,
                                                             message='Just measuring runtime')
"""
TASK_SERVICE_AFTER = f"""        {TASK_SERVICE_MARKER}
        if self._minimum_command_lifetime_s is not None:
            self._minimum_command_lifetime = timeout.Timeout(self._minimum_command_lifetime_s,
                                                             message='Just measuring runtime')

        super(SparkTaskService, self)._run_command(command, env, event,
                                                   stdout, stderr, index,
                                                   prefix_output_with_timestamp)
"""


# The driver asks each task service for its rank's exit code with a 1 s wait between checks, and
# nothing wakes the wait when the rank exits: up to a second more per run. The check is a local
# condition variable, so every 0.1 s (Horovod's own floor) costs nothing.
RSH_BEFORE = "            exit_code = task_client.wait_for_command_exit_code()\n"
RSH_AFTER = f"            exit_code = task_client.wait_for_command_exit_code(delay=0.1)  {RSH_MARKER}\n"


def replace_once(path: Path, before: str, after: str, marker: str) -> None:
    text = path.read_text()
    if marker in text:
        return
    if text.count(before) != 1:
        sys.exit(f"patch_horovod: the passage to patch was not found exactly once in {path}")
    path.write_text(text.replace(before, after))


def patched_files(root: Path) -> list[tuple[Path, str, str, str]]:
    spark = root / "horovod" / "spark"
    return [
        (spark / "task" / "task_service.py", TASK_SERVICE_BEFORE, TASK_SERVICE_AFTER, TASK_SERVICE_MARKER),
        (spark / "driver" / "rsh.py", RSH_BEFORE, RSH_AFTER, RSH_MARKER),
    ]


def installed_is_patched() -> bool:
    """Whether the Horovod this interpreter imports carries every patch (checked without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("horovod")
    if spec is None or spec.origin is None:
        return False
    root = Path(spec.origin).parent.parent
    return all(path.is_file() and marker in path.read_text() for path, _, _, marker in patched_files(root))


def main(arguments: list[str]) -> None:
    """`patch_horovod.py SOURCE_TREE` patches an unpacked sdist; `patch_horovod.py --check` exits 1
    when the installed Horovod lacks a patch."""
    if arguments == ["--check"]:
        sys.exit(0 if installed_is_patched() else 1)
    if len(arguments) != 1:
        sys.exit("usage: patch_horovod.py SOURCE_TREE | --check")
    for path, before, after, marker in patched_files(Path(arguments[0])):
        replace_once(path, before, after, marker)


if __name__ == "__main__":
    main(sys.argv[1:])
