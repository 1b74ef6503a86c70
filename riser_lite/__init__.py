"""riser-lite: reinforcement learning for LLM-based recommendation (RISER), at laptop scale.

The library of the method. The command line, the experiment harness and the reference baselines built on
it (SASRec, the 20-candidate protocol) live in `riser_lab`, which this package never imports.

The map of the house, one room per stage, in the order a course walks through them:

    data/         loaders for every source, the synthetic world and its oracles, validation, statistics
    items/        the catalogue (unique titles, the item trie), the tokenizer, the one prompt template,
                  item representations (titles or semantic IDs)
    model/        the backbone, the one cached forward, beam search and exact scores, policy log-probs
    rl/           rollouts, rewards, advantages, pairs, losses, the step batch, config, the trainer
    eval/         HR@K / NDCG@K, acceptance, reference rankers (popularity, the oracles)
    teach/        plotly figures, widgets, exercises and their solutions, the notebooks' shared SFT start,
                  the notebook's recorded values
    sft.py        supervised fine-tuning          runs.py  run folders
    distributed.py  several processes (accelerate / torchrun): shares of each step, gathering, main writes
"""
