"""L2 spoken-English grader: a speech (LLM) backbone with LoRA, regression and classification heads."""
