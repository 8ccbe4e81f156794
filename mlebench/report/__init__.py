"""Reports of stored results: the paper's tables (:mod:`.tables`) rendered as LaTeX, HTML with
plots, Markdown or CSV (:mod:`.render`), comparisons with the published numbers, paired
comparisons of runs, exports (CSV, JSON) and the console tables.

Everything here reads the results store and never writes to it.
"""
