"""An example task that runs far too long: it prints a tick every second for
ten minutes. The site's timeout (HIVEMIND_DEFAULT_TIMEOUT; the demo sets a
short one) stops it, and the result zip still holds what it wrote so far."""

import time

with open("progress.log", "w") as progress:
    for second in range(600):
        print(f"tick {second}", flush=True)
        progress.write(f"{second}\n")
        progress.flush()
        time.sleep(1)
print("finished (the timeout should have stopped this long before)", flush=True)
