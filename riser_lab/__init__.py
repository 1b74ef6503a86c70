"""riser_lab: the command line, the experiments and the tools built on the library `riser_lite`.

`riser_lite` is what a student reads beside the notebooks: the stages of the method. The lab uses it and
is never imported by it:

    cli/           the `riser-lite` command: each subcommand's options, their checks, one-line errors
    compare.py     variants x seeds from one SFT start, with intervals and paired tests (notebook 06)
    demo.py        the demo: a small compare with its HTML report (report.py)
    sasrec.py      the SASRec baseline (notebooks 02 and 06)
    candidates.py  the LLaRA / S-DPO 20-candidate protocol (notebook 02)
    latency.py     time per recommendation, greedy title vs. beam list (notebook 06)
    amazon_sids.py the semantic IDs MiniOneRec releases with its Amazon CSVs
    synthetic.py   `python -m riser_lab.synthetic`: write the synthetic dataset (the bundled one: seed 0)
    colab.py       publishing the notebooks for Colab: the repository, badges, the setup cell they carry
    sweep.py       `python -m riser_lab.sweep`: compare over learning rates, a stability map
    choose.py      `python -m riser_lab.choose`: each variant's setting picked on validation sweeps
"""
