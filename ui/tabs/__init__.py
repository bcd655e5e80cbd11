"""One builder per tab: each lays out its components inside the open gr.Blocks and binds them to ui.callbacks."""
