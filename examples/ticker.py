"""An example target: prints a numbered tick every second, on stdout, forever."""

import sys
import time

count = 0
while True:
    count += 1
    print(f"tick {count}", flush=True)
    if count % 10 == 0:
        print(f"ten more ticks ({count})", file=sys.stderr, flush=True)
    time.sleep(1)
