"""Which lines keep memory: tracemalloc in the real server and worker under load.

`python -m bench.leakcheck [--messages N]` runs the pipeline with tracemalloc on in
both processes (sitecustomize.py beside this file), snapshots them after a warm-up
and again at the end, and prints the allocation sites that grew between the two.
"""
