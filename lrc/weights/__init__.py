"""Weights from files: safe checkpoint reading and loading released or earlier-stage weights
(``model.init``)."""
