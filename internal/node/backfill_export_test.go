package node

// PauseBackfill stops (true) or resumes (false) the ledger backfill of
// every node in the process.
func PauseBackfill(paused bool) { backfillPaused.Store(paused) }
