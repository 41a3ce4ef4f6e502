"""Pure text helpers below the model code: ROUGE scoring, prompt defaults and templates, data tags."""
