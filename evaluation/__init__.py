"""The evaluation harness: the product's detector measured on real labelled data.

Runs from a source checkout (like bench/): it bundles the NAB corpus and reads the
simulator's replay data, neither of which belongs in the product's wheel. See
docs/evaluation.md.
"""
