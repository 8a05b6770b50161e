"""Profiles in use, the pipeline's last stage: the registered model scores every shopper into
``gold/profiles``; explanations, audiences, similar users, category demand and the analyst
views are built from that table."""
