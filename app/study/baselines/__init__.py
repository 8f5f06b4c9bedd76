"""The baselines the study compares the approximation against (METHOD.md, "Known weaknesses" 3),
one module per kind:

- ``unigram``: :class:`Unigram`, character frequencies of the corpus;
- ``ngram``: :class:`SuffixNgram`, the longest-suffix-match n-gram with back-off ("infini-gram"
  style), over the suffix array of ``suffix_array``;
- ``logit_lens``: :class:`LogitLens`, the model's final LayerNorm and head applied to the residual
  stream after each block (last position); the last block's is the model's own softmax;
- ``store_baseline``: :class:`StoreBaseline`, the approximation on another store of the model;
- ``seeds``: the committed models of other seeds (METHOD.md's noise floor);
- ``siblings``: this model's other stores of the same pool;
- ``standard``: the report's usual set (n-gram, unigram, every block's logit lens);
- ``common``: the :class:`Prediction` they answer with and the checks they share.

Every baseline answers ``distributions(prompts_ids (B, T)) -> (B, V) float64`` (rows sum to 1);
the unigram, the n-gram and the logit lens also answer ``predict(prompts_ids) -> Prediction`` (the
same probabilities, plus which rows had no evidence and fell back to the unigram, plus
baseline-specific details), so the report scores them all alike.
"""
