package xks

import (
	"context"
)

type healthResponse struct {
	FleetSize  int          `json:"xksProxyFleetSize"`
	Vendor     string       `json:"xksProxyVendor"`
	Model      string       `json:"xksProxyModel"`
	EKMVendor  string       `json:"ekmVendor"`
	EKMDetails []ekmDetails `json:"ekmFleetDetails"`
}

type ekmDetails struct {
	ID           string `json:"id"`
	Model        string `json:"model"`
	HealthStatus string `json:"healthStatus"`
}

// healthResponse reports this node: ACTIVE when its HSM answers, its ledger
// is sound and the node's own check passes; UNAVAILABLE otherwise.
func (h *Handler) healthResponse(ctx context.Context, c *compiled) healthResponse {
	status := "ACTIVE"
	err := h.svc.Health(ctx)
	if err == nil && h.health != nil {
		err = h.health(ctx)
	}
	if err != nil {
		status = "UNAVAILABLE"
		c.lg.Warn("xks health: unavailable", "err", err)
	}
	return healthResponse{FleetSize: 1, Vendor: "custos", Model: "custos XKS proxy API v1", EKMVendor: "custos",
		EKMDetails: []ekmDetails{{ID: c.ekmID, Model: "custos cluster over PKCS#11 HSMs", HealthStatus: status}}}
}
