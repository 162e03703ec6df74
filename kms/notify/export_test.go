package notify

// SetIdleAdvance lowers the number of skipped records after which the loop
// moves a cursor without a delivery.
func SetIdleAdvance(n *Notifier, k int) { n.idle = k }

// RecordJSON and WebhookBody expose the wire encoding to tests.
var RecordJSON = recordJSON

func WebhookBody(sink string, records ...[]byte) []byte {
	items := make([]item, len(records))
	for i, r := range records {
		items[i] = item{json: r}
	}
	return webhookBody(sink, items)
}
