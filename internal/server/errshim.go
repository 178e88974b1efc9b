package server

import (
	"encoding/json"
	"net/http"

	"github.com/regd/regd/registry"
)

// writeError writes err as the contract's error JSON
// ({"error":{"code","message"}}) with its kind's status, no body for HEAD.
//
// SHIM, to be replaced on merge: the REST API's one error path is in api,
// which is gaining an exported entry point for writers outside echo
// (api.WriteError(w, r, err)). Until it lands, this local copy serves the
// one kind the disk wait answers with (unavailable, 503). On merge, the
// body of this function becomes `api.WriteError(w, r, err)` and the rest of
// this file goes.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	re := registry.AsError(err)
	status := http.StatusInternalServerError
	if re.Kind == registry.KindUnavailable {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": re.Code, "message": re.Message}})
	_, _ = w.Write(body)
}
