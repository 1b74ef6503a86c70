"""riser-lite: reinforcement learning for LLM-based recommendation (RISER), at laptop scale.

The map of the house, one room per stage, in the order a course walks through them:

    data/         loaders for every source, the synthetic world and its oracles, validation, statistics
    items/        the catalogue (unique titles, the item trie), the tokenizer, the one prompt template,
                  item representations (titles or semantic IDs)
    model/        the backbone, the one cached forward, beam search and exact scores, policy log-probs
    rl/           rollouts, rewards, advantages, pairs, losses, the step batch, config, the trainer
    eval/         HR@K / NDCG@K, acceptance, the 20-candidate protocol, baselines (popularity, oracles,
                  SASRec), latency
    experiments/  compare (variants x seeds), the demo (a small compare), its HTML report
    teach/        plotly figures, widgets, exercises and their solutions, the notebooks' shared SFT start,
                  notebook and Colab helpers
    sft.py        supervised fine-tuning          runs.py  run folders
    cli/          the `riser-lite` command: each subcommand's options and run function
    cli_args.py   the checks every command-line option gets before anything runs
    distributed.py  several processes (accelerate / torchrun): shares of each step, gathering, main writes
"""
