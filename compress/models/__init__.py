"""Models as compress hands them between stages: finding and loading them (loading.py), and the kinds a stage
makes, with how each is saved, loaded and run (artifacts.py). Below the stages, which make them, and the
evaluation, which runs them."""
