"""Where seglib meets the cluster: the Spark session, the warehouse (the one owner of table writes),
small files (`FileStore`), ownership markers and progress lines."""
