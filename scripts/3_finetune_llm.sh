#!/usr/bin/env bash
# Step 3: LoRA fine-tuning of the strategy LLM (paper: Llama-2-7b, q_proj/v_proj, rank 8, lr 5e-5,
# 5 epochs, cosine, batch 16 x 4 accumulation, fp16, LLaMA-Factory `default` template).
# Reads:  $LLM_DIR/prompts_4_LLaMA.json, the base model
# Writes: $ADAPTER_DIR (LoRA adapter, checkpoints, training_loss.png)
# Variables: BASE_MODEL (meta-llama/Llama-2-7b-hf: a hub id or a local folder), ADAPTER_DIR
#   ($LLM_DIR/saves/llama2-7b-lora), EPOCHS (5.0), LR (5e-5), BATCH (16), GRAD_ACC (4), PRECISION (fp16|bf16|fp32)
# Extra arguments go to finetune_llm.py. Rerunning resumes from the last checkpoint in ADAPTER_DIR.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
prec=()
case "${PRECISION:-fp16}" in fp16) prec=(--fp16) ;; bf16) prec=(--bf16) ;; fp32) ;; esac
run "$PY" LLM_inference/finetune_llm.py --model_name_or_path "${BASE_MODEL:-meta-llama/Llama-2-7b-hf}" \
  --dataset "$LLM_DIR/prompts_4_LLaMA.json" --template default --finetuning_type lora \
  --lora_target q_proj,v_proj --output_dir "${ADAPTER_DIR:-$LLM_DIR/saves/llama2-7b-lora}" \
  --per_device_train_batch_size "${BATCH:-16}" --gradient_accumulation_steps "${GRAD_ACC:-4}" \
  --lr_scheduler_type cosine --logging_steps 10 --save_steps 100 --learning_rate "${LR:-5e-5}" \
  --num_train_epochs "${EPOCHS:-5.0}" --plot_loss "${prec[@]}" "$@"
