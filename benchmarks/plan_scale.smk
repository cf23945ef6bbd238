# The seed-001 workflow (Sadler et al., "Large, parallel deep learning experiments using
# Snakemake": 101 sites x 9 factors x 30 seeds) as a Snakefile, for `benchmarks/plan_scale.py`.
#
# It is the post's "entire workflow" with the `utils` helpers replaced by `touch`, and the
# grid size read from `--config sites=N seeds=M` (defaults: the full 101 x 30). Site ids are
# zero-padded like the shoal experiment's. `obs_file.csv` and `input_file.csv` must exist in
# the working directory so the DAG resolves; nothing else should.
#
#     snakemake -n --quiet rules --cores 1 -s plan_scale.smk      # 81,913 jobs at full size

all_sites = [f"{i:08d}" for i in range(int(config.get("sites", 101)))]
all_factors = [0, 1, 5, 10, 20, 40, 80, 160, 320]
all_seeds = list(range(int(config.get("seeds", 30))))


rule all:
    input:
        "expA/overall_metrics.csv",


rule prep_io_data:
    input:
        "obs_file.csv",
        "input_file.csv",
    output:
        "expA/site_id_{site_id}/prepped_data.npz",
    shell:
        "touch {output}"


rule train_model:
    input:
        "expA/site_id_{site_id}/prepped_data.npz",
    output:
        "expA/site_id_{site_id}/factor_{factor}/rand_seed_{seed}/trained_model",
    shell:
        "touch {output}"


rule make_predictions:
    input:
        "expA/site_id_{site_id}/prepped_data.npz",
        "expA/site_id_{site_id}/factor_{factor}/rand_seed_{seed}/trained_model",
    output:
        "expA/site_id_{site_id}/factor_{factor}/rand_seed_{seed}/{partition}_preds.csv",
    shell:
        "touch {output}"


rule evaluate_predictions:
    input:
        "obs_file.csv",
        "expA/site_id_{site_id}/factor_{factor}/rand_seed_{seed}/{partition}_preds.csv",
    output:
        "expA/site_id_{site_id}/factor_{factor}/rand_seed_{seed}/{partition}_metrics.csv",
    shell:
        "touch {output}"


rule combine_metrics:
    input:
        expand(
            "expA/site_id_{sites}/factor_{factors}/rand_seed_{seeds}/validation_metrics.csv",
            sites=all_sites,
            factors=all_factors,
            seeds=all_seeds,
        ),
    output:
        "expA/overall_metrics.csv",
    shell:
        "touch {output}"
