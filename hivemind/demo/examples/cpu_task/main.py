"""A CPU-bound example task: counts primes with a sieve, several rounds, and
writes its results into the workspace (everything there comes back in the
result zip)."""

import json
import os
import time

# Fixed: a task from the Node Pool gets no environment of its own to tune them with.
LIMIT = 2_000_000
ROUNDS = 6


def count_primes(limit: int) -> int:
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            # A plain Python loop on purpose: the point is to keep a core busy.
            for multiple in range(n * n, limit + 1, n):
                sieve[multiple] = 0
    return sum(sieve)


def main() -> None:
    os.makedirs("results", exist_ok=True)
    started = time.time()
    counts = []
    for round_no in range(1, ROUNDS + 1):
        counts.append(count_primes(LIMIT))
        print(f"round {round_no}/{ROUNDS}: {counts[-1]} primes below {LIMIT}", flush=True)
    summary = {"limit": LIMIT, "rounds": ROUNDS, "primes": counts[-1], "seconds": round(time.time() - started, 3)}
    with open("results/summary.json", "w") as out:
        json.dump(summary, out, indent=2)
    with open("results/primes_tail.txt", "w") as out:
        tail = [n for n in range(max(2, LIMIT - 1000), LIMIT + 1) if all(n % d for d in range(2, int(n**0.5) + 1))]
        out.write("\n".join(map(str, tail)) + "\n")
    print("wrote results/summary.json and results/primes_tail.txt", flush=True)


if __name__ == "__main__":
    main()
