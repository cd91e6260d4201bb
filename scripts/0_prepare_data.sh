#!/usr/bin/env bash
# Step 0: put the ESConv MultiESC split (910/195/195 dialogues) into $DATA_DIR/{train,valid,test}.txt.
# Reads:  the internet (SOURCE=download), HF thu-coai/esconv files (SOURCE=hf), the hub (SOURCE=hub),
#         the shared research copy (SOURCE=shared), or the bundled synthetic demo (SOURCE=demo).
# Writes: $DATA_DIR/train.txt, valid.txt, test.txt
# Variables: SOURCE=download|hf|hub|shared|demo (default download), HF_DIR (SOURCE=hf: folder with
#   train/valid/test.json), MAGIC_DATA_DIR (SOURCE=shared; default ../shared/data/esconv), DATA_DIR (data)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
SOURCE="${SOURCE:-download}"
mkdir -p "$DATA_DIR"
case "$SOURCE" in
  download) run "$PY" data/download_esconv.py --output_dir "$DATA_DIR" ;;
  hf)       run "$PY" data/convert_hf_esconv.py --input_dir "${HF_DIR:?set HF_DIR to the folder of the HF json files}" --output_dir "$DATA_DIR" ;;
  hub)      run "$PY" data/convert_hf_esconv.py --from_hub --output_dir "$DATA_DIR" ;;
  shared)
    SHARED="${MAGIC_DATA_DIR:-$ROOT/../shared/data/esconv}"
    for f in "$SHARED/reconstructed/train.txt" "$SHARED/magic/valid.txt" "$SHARED/magic/test.txt"; do
      [ -f "$f" ] || { echo "error: $f not found (set MAGIC_DATA_DIR)" >&2; exit 1; }
    done
    cp "$SHARED/reconstructed/train.txt" "$DATA_DIR/train.txt"
    cp "$SHARED/magic/valid.txt" "$DATA_DIR/valid.txt"
    cp "$SHARED/magic/test.txt" "$DATA_DIR/test.txt" ;;
  demo)     cp data/demo/train.txt data/demo/valid.txt data/demo/test.txt "$DATA_DIR/" ;;
  *) echo "error: SOURCE=$SOURCE; expected download, hf, hub, shared or demo" >&2; exit 2 ;;
esac
echo "dialogues in $DATA_DIR: $(wc -l < "$DATA_DIR/train.txt") train, $(wc -l < "$DATA_DIR/valid.txt") valid, $(wc -l < "$DATA_DIR/test.txt") test"
