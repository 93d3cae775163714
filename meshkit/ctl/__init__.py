"""``meshkit ctl``: etcdctl 3.4's commands and output formats, through the public v3 API."""
