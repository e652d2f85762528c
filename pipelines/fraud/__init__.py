"""Claims fraud outputs for people: reason texts, the investigators' worklist, ground truth and evaluation."""
