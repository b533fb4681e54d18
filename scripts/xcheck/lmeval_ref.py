# Cross-check of `perp eval --tasks` against EleutherAI's lm-evaluation-harness (dev machine only, never CI).
# lm-eval's own task configs are reused with the dataset pointed at the shipped jsonl copies (PERP_DATA/tasks/*):
# boolq / rte are super_glue's (premise / hypothesis schema), hellaswag keeps lm-eval's preprocessing but starts from
# the joined `ctx` the shipped copy has (README: Deviations). Needs lm_eval (+ accelerate, datasets) in a venv:
#   node bin/perp.js eval --model M --tasks piqa,... --limit N --json > /tmp/perp.json
#   python scripts/xcheck/lmeval_ref.py M N /tmp/perp.json
import json, os, re, sys, tempfile

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

model, limit, perp = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))["tasks"]
data = os.path.abspath(os.path.join(os.environ.get("PERP_DATA", "../shared/data"), "tasks"))
T = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
base = {"arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml", "boolq": "super_glue/boolq/default.yaml",
        "rte": "super_glue/rte/default.yaml", "piqa": "piqa/piqa.yaml", "openbookqa": "openbookqa/openbookqa.yaml",
        "winogrande": "winogrande/default.yaml", "hellaswag": "hellaswag/hellaswag.yaml"}
d = tempfile.mkdtemp()
for t, y in base.items():
    extra = ""
    if t == "winogrande":
        with open(os.path.join(T, "winogrande/preprocess_winogrande.py")) as f, open(os.path.join(d, "preprocess_winogrande.py"), "w") as g:
            g.write(f.read())
        extra = "".join(f"{k}: !function preprocess_winogrande.{k}\n" for k in ["doc_to_text", "doc_to_target", "doc_to_choice"])
    if t == "hellaswag":
        with open(os.path.join(T, "hellaswag/utils.py")) as f, open(os.path.join(d, "hs_utils.py"), "w") as g:
            g.write(f.read().replace('doc["ctx_a"] + " " + doc["ctx_b"].capitalize()', 'doc["ctx"]'))
        extra = "process_docs: !function hs_utils.process_docs\n"
    with open(os.path.join(d, f"x_{t}.yaml"), "w") as f:
        f.write(f"include: {os.path.join(T, y)}\ntask: x_{t}\ntag: []\ndataset_path: json\ndataset_name: null\n"
                f"dataset_kwargs:\n  data_files:\n    validation: {data}/{t}/validation.jsonl\n"
                f"training_split: null\nvalidation_split: validation\ntest_split: null\n{extra}")
r = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model},dtype=float32", tasks=[f"x_{t}" for t in perp],
                            limit=limit, device="cpu", batch_size=1, task_manager=TaskManager(include_path=d))
worst = 0.0
for t, m in r["results"].items():
    for k, v in m.items():
        key = k.split(",")[0]
        if re.fullmatch(r"acc(_norm)?(_stderr)?", key):
            ours = perp[t[2:]].get(key)
            worst = max(worst, abs(v - ours))
            print(f"{t[2:]:14s} {key:16s} lm-eval {v:.6f}  perp {ours:.6f}")
print(f"largest difference {worst:.2e}")
