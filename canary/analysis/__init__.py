"""Pure statistics and the judge: counts in, verdicts with evidence out.  No I/O in this package."""
