"""The profile model: training set, input pipeline, BERT model, distributed training, evaluation."""
