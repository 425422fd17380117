package schemas

// OpenAI error types, in an RPCErrorBody and in the gateway's error objects.
const (
	ErrTypeInvalidRequest = "invalid_request_error"
	ErrTypeServer         = "server_error"
)

// RPCErrorBody is the body of an interactive "error" reply on lf.rpc.<model>
// (the "final" reply holds a CompletionResponse): an HTTP status and an
// OpenAI-style error. A refused request has the ValidationMessage of its
// error as Message and Param.
type RPCErrorBody struct {
	Status  int    `json:"status"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
}
