"""The verbs over the layers: shoal.Experiment with plan/run/results, the run driver, progress,
clean.
"""
