"""finetune_llm.py under torchrun (gloo, CPU): 2 processes x batch 2 against 1 process x batch 4 (the same
global batch) on a tiny Llama. Both write an adapter; only rank 0 writes (one set of files); the step losses
and the adapter weights agree within TOL; rerunning with more steps resumes from the last checkpoint. Trainer (accelerate) cuts each global batch of the shared shuffled order between the
ranks, and averages the token count over the ranks (average_tokens_across_devices) so the loss is the token
mean over the global batch, as in one process; what is left is float rounding. That holds for
--grad_accum_loss token_mean, which the test uses: under the default (released) rule each rank's loss is the
mean over its own micro-batch and DDP averages the ranks' gradients, as transformers 4.38 did, which equals one
process only when the ranks' micro-batches hold equally many answer tokens (measured here: adapter weights
2.4e-3 apart, relative)."""
import json
import os
import subprocess
import sys

import pytest

from magic.testing.make_small_llm import make_tiny_llama

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-4  # relative, per logged step loss and on the adapter weights (measured: ~1e-7)


def _run(cmd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def _losses(out):
    state = json.loads(open(os.path.join(out, "trainer_state.json")).read())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    model = make_tiny_llama(tmp_path)
    pairs = [{"instruction": f"(1) Seeker: my problem number {i} is {'hard ' * (i % 5)}",
              "output": f"The motivation of the supporter in choosing the strategy [question] is to ask {i}."}
             for i in range(16)]
    data = tmp_path / "prompts.json"
    data.write_text(json.dumps(pairs))
    common = ["LLM_inference/finetune_llm.py", "--model_name_or_path", model, "--dataset", str(data),
              "--gradient_accumulation_steps", "1", "--grad_accum_loss", "token_mean", "--max_steps", "6", "--learning_rate", "5e-3",
              "--lr_scheduler_type", "constant", "--logging_steps", "1", "--save_steps", "1000",
              "--device", "cpu", "--disable_tqdm", "--plot_loss"]
    _run([sys.executable, *common, "--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "4"])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *common,
          "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "2"])
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    assert max(abs(a - b) / a for a, b in zip(one, two)) <= TOL, (one, two)
    assert one[-1] < one[0]  # it learns
    for out in ("one", "two"):
        d = tmp_path / out
        assert (d / "adapter_model.safetensors").exists() and (d / "training_loss.png").exists()
    # the adapters too: a random model's loss is nearly the same on every sample, the update is not
    from safetensors.torch import load_file

    a1 = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    a2 = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert a1.keys() == a2.keys()
    scale = max(float(t.abs().max()) for t in a1.values())
    diff = max(float((a1[k] - a2[k]).abs().max()) for k in a1)
    assert diff <= TOL * scale, (diff, scale)
    res = json.loads((tmp_path / "two" / "train_results.json").read_text())
    assert res["world_size"] == 2 and res["global_step"] == 6
    # the same command with more steps resumes from the last checkpoint, under torchrun too
    common[common.index("--max_steps") + 1] = "8"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *common,
          "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "2"])
    res = json.loads((tmp_path / "two" / "train_results.json").read_text())
    assert res["global_step"] == 8 and res["resumed_from"].endswith("checkpoint-6")


def test_deepspeed_configs_are_shipped_and_checked(tmp_path):
    """ZeRO-2/3 configs parse and leave batch and precision to the Trainer ("auto"); --deepspeed with a missing
    file or without the deepspeed package fails at once with one clear line (DeepSpeed needs CUDA: not run here)."""
    import importlib.util

    for stage in (2, 3):
        cfg = json.loads(open(os.path.join(ROOT, "LLM_inference", "ds_configs", f"ds_z{stage}_config.json")).read())
        assert cfg["zero_optimization"]["stage"] == stage
        assert cfg["train_micro_batch_size_per_gpu"] == "auto" and cfg["bf16"]["enabled"] == "auto"
    model = make_tiny_llama(tmp_path)
    data = tmp_path / "p.json"
    data.write_text(json.dumps([{"instruction": "a", "output": "b"}]))
    base = [sys.executable, "LLM_inference/finetune_llm.py", "--model_name_or_path", model, "--dataset", str(data),
            "--output_dir", str(tmp_path / "out"), "--device", "cpu", "--deepspeed"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run(base + [str(tmp_path / "nope.json")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "config file not found" in r.stderr
    if importlib.util.find_spec("deepspeed") is None:
        r = subprocess.run(base + ["LLM_inference/ds_configs/ds_z2_config.json"], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 1 and "needs the deepspeed package" in r.stderr
    assert not (tmp_path / "out").exists()
