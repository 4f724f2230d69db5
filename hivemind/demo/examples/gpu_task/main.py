"""An example GPU task: lists the GPUs the container was given (via
nvidia-smi, which the NVIDIA container toolkit mounts in) and writes the
listing to gpus.txt. Sent to the `gpu` queue; the demo skips it where the site
has no GPU."""

import shutil
import subprocess
import sys

if shutil.which("nvidia-smi") is None:
    print("nvidia-smi not found: this container was given no GPU", file=sys.stderr, flush=True)
    sys.exit(2)
listing = subprocess.run(
    ["nvidia-smi", "--query-gpu=index,name,memory.total,utilization.gpu", "--format=csv"],
    capture_output=True,
    text=True,
    check=True,
).stdout
print(listing, flush=True)
with open("gpus.txt", "w") as out:
    out.write(listing)
