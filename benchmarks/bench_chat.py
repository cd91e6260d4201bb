"""Per-turn latency of chat.py with the demo models (target: < 5 s per turn on 2 CPU cores).

    .venv/bin/python benchmarks/bench_chat.py [--demo_dir demo_run] [--threads N] [--turns 4]

Runs the chat engine of chat.py --demo in process (models loaded once, as in a chat) on a fixed
conversation and prints, per turn, the wall time and the CPU time of the strategy LLM and of the generator.
On a shared machine the wall time is inflated by other processes; the CPU time (all threads) bounds what
the turn costs on 2 free cores. The first line names the CPU kind (model, cores, its bfloat16 matrix units: AMX,
AVX512-BF16 or none), so turns measured on different machines can be put side by side (benchmarks/README.md).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MESSAGES = ["Hi, I have been feeling really lonely lately.", "My best friend moved to another city last month.",
            "I do not know how to make new friends at my age.", "Maybe I could join a club or something."]


def main(argv=None) -> int:
    from magic.common.validate import positive_int

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo_dir", default="demo_run")
    p.add_argument("--threads", type=positive_int, default=None, help="chat.py --threads (default: its --demo default)")
    p.add_argument("--turns", type=positive_int, default=len(MESSAGES))
    args = p.parse_args(argv)

    import torch

    import chat
    from magic.chat.engine import generator_record

    cfg = chat.parse_config(["--demo", "--demo_dir", args.demo_dir, "--device", "cpu"]
                            + (["--threads", str(args.threads)] if args.threads else []))
    engine, desc = chat.build_engine(cfg)
    from magic.study.cells import machine
    m = machine()
    print(f"CPU kind: {m['cpu']}, {m['cores']} cores, bfloat16 units: {', '.join(m['bf16_units'] or ['none'])}")
    print(f"{desc}; max_new_tokens {engine.source.engine.generation.max_new_tokens}; {torch.get_num_threads()} "
          f"threads; load average {os.getloadavg()[0]:.1f}")
    session = engine.session()
    walls, cpus = [], []
    for k in range(args.turns):
        session.add_seeker(MESSAGES[k % len(MESSAGES)])
        sample = session.sample()
        t0, c0 = time.perf_counter(), time.process_time()
        label, motivation, _ = engine.infer_strategy(sample)
        t1, c1 = time.perf_counter(), time.process_time()
        response, _, _, session.bank = engine.generate(generator_record(session.sample(label), label, motivation),
                                                       session.bank)
        t2, c2 = time.perf_counter(), time.process_time()
        from magic.esconv.dialogues import Turn
        session.turns.append(Turn("sys", response, label))
        walls.append(t2 - t0)
        cpus.append(c2 - c0)
        print(f"turn {k + 1}: wall {t2 - t0:.2f} s (LLM {t1 - t0:.2f}, generator {t2 - t1:.2f}); "
              f"CPU {c2 - c0:.2f} s (LLM {c1 - c0:.2f}, generator {c2 - c1:.2f}); [{label}] {response}")
    print(f"mean per turn: wall {sum(walls) / len(walls):.2f} s, CPU {sum(cpus) / len(cpus):.2f} s (target < 5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
