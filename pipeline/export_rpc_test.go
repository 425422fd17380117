package pipeline

// ServeRPCEvery is ServeRPC with the keepalive period of a test.
var ServeRPCEvery = (*Bus).serveRPC
