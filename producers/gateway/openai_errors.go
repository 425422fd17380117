package gateway

import (
	"errors"
	"fmt"
	"net/http"
)

// The OpenAI error objects of the Files and Batches APIs: 400 names the
// parameter at fault, 404 the object that does not exist, 413 a file over
// the limit, 500 a bus or store failure.

// errInvalid writes a 400 invalid_request_error naming param.
func errInvalid(w http.ResponseWriter, param, code, format string, args ...any) {
	writeError(w, http.StatusBadRequest, "invalid_request_error", param, code, fmt.Sprintf(format, args...))
}

// errNoSuch writes OpenAI's 404 for an object id: "No such File object: file-x".
func errNoSuch(w http.ResponseWriter, what, id string) {
	writeError(w, http.StatusNotFound, "invalid_request_error", "id", "", fmt.Sprintf("No such %s object: %s", what, id))
}

// errServer writes a 500 server_error for a failure of the bus or the store.
func errServer(w http.ResponseWriter, err error) {
	writeError(w, http.StatusInternalServerError, "server_error", "", "bus_error", err.Error())
}

// Errors of the Files and Batches APIs.
var (
	// ErrFileTooLarge: an upload went past FilesConfig.MaxFileBytes.
	ErrFileTooLarge = errors.New("file too large")
	// ErrNotJSONL: an uploaded file has a line that is not a JSON object.
	ErrNotJSONL = errors.New("file is not JSONL")
	// ErrNoFile: no file (or no file object) has that id.
	ErrNoFile = errors.New("no such file")
)

// modelNotFound is OpenAI's message of a 404 model_not_found (whose param
// is null, as OpenAI's).
func modelNotFound(name string) string {
	return fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", name)
}
