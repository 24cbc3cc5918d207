"""The HTML report of a segmentation: charts, the page, and the `report` stage."""
