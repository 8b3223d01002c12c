"""The end-to-end demo: synthetic data -> SFT -> PIR-GRPO -> held-out evaluation, with ablations.

    tempo-fast demo                          # a few minutes on a 2-core CPU, writes runs/demo
    tempo-fast demo --quick --out tmp        # a smoke run in well under a minute (tests)
    tempo-fast demo --markdown runs/demo/demo_metrics.json [more.json ...]   # README table

It starts from the pretrained `tiny` preset (`model`; the paper starts from a pretrained
Qwen2.5-VL, which already matches words against what it sees), and on a fresh machine with nothing
downloaded, `run_demo(cfg)`:
1. renders the synthetic set (`tempo_fast.data.generate_synthetic`: short clips of coloured shapes
   with events at known times; train / val / test by video, `split_fractions`) into OUT/data, sized
   so that the answer must come from the video: 4-8 s clips with one or two objects, each doing ONE
   thing (appear, disappear, move or change colour) at a random time. The held-out set
   (`eval_split`) is every relevant query of the split plus negatives made from copies of them
   (`eval_*_fraction`: irrelevant queries borrowed from other clips and partially irrelevant ones
   with one word swapped, both exact with the generator's facts);
2. SFT on the train split with PIR negatives answered `none` (`tempo_fast.train.sft.train_sft`) into
   OUT/sft, then PIR-GRPO from it (`tempo_fast.train.grpo.train_grpo`) into OUT/grpo;
3. scores (`tempo_fast.train.evaluate`: greedy answers, R1@0.5/0.7, mIoU, refusal accuracy, false
   refusals, and `refusal_auc`, the AUC of the model's P(none) at the answer's decision token, each
   with a seeded 95% bootstrap interval) of the trivial baselines (whole video, random window,
   always refuse, and "prior": the one fixed window of best mean IoU on the train split, what a
   model learns that reads neither the video nor the query), SFT and GRPO, and of SFT and GRPO
   with every relevant query asked of ANOTHER held-out video ("sft_swapped", "grpo_swapped"): what
   a model gets from the query text alone, so the gap to "sft" / "grpo" is what it takes from the
   video;
4. ablations: "grpo_no_pir" (the GRPO recipe from the same SFT checkpoint, relevant samples only),
   "no_pir" (SFT and GRPO both without any PIR sample), and "uniform" against "saa" frames at the
   same visual-token budget (the same frames per video and pixels per frame; "saa" IS the main SFT
   run, "uniform" a second SFT with uniformly spaced frames);
5. writes OUT/demo_metrics.json, OUT/answers/<model>.jsonl (every answer and its P(none)), the
   training curves (OUT/sft_curves.png, OUT/grpo_curves.png), an SAA picture of one held-out video
   (OUT/saa.png), prints the table and the `tempo-fast ground` command of the trained checkpoint.

demo_metrics.json: one entry per model ("sft", "sft_swapped", "grpo", "grpo_swapped", "saa",
"uniform", "grpo_no_pir", "no_pir") and "baselines" {"whole", "random", "refuse", "prior"}, each
with R1@0.5, R1@0.7, mIoU, refusal_acc, false_refusal, refusal_auc (percent; see
`tempo_fast.train.evaluate`), the refusal accuracy per negative kind, the counts and "ci" {metric:
[low, high]}; "setup" (the resolved DemoConfig, the held-out counts), "machine" (CPU, cores,
threads, load averages), "seconds" (wall time per stage), "evaluation_seconds", "checkpoint" and
"ground_command". Every number but the times is a function of the config and the machine's
arithmetic: one thread, seeded data, PIR samples, order, rollouts and bootstrap. Runs resume from
their folders, so a second `tempo-fast demo` with the same OUT reuses finished training.

Modules: `config` (DemoConfig, QUICK, the training configs, the held-out set), `pipeline`
(run_demo), `report` (tables, plots, the ground command).
"""
from tempo_fast.demo.config import QUICK, DemoConfig, data_config, eval_records, grpo_config, quick_config, sft_config
from tempo_fast.demo.pipeline import METRICS, MODELS, run_demo
from tempo_fast.demo.report import format_markdown, format_table, ground_command, saa_picture

__all__ = ["METRICS", "MODELS", "QUICK", "DemoConfig", "data_config", "eval_records", "format_markdown",
           "format_table", "grpo_config", "ground_command", "quick_config", "run_demo", "saa_picture", "sft_config"]
