# The files in dcrf_suite/ run inside djangochannelsrestframework's unpacked test suite, in
# its own pytest process (see test_djangochannelsrestframework.py), not in this one.
collect_ignore = ["dcrf_suite"]
