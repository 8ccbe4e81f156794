"""Side-by-side benchmarks (``mlebench bench ...``): each measures both variants in one run and
prints their ratio; speed goals live here, never in timed tests."""
