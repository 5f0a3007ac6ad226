"""Typed results (the only schema, published as ``schema.json``) and their renderings: JSON, CSV, terminal tables,
plots and the HTML report. Knows no torch."""
