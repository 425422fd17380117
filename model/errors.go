package model

import "errors"

// Sentinel errors of package model. Errors returned by this package wrap one
// of these; match them with errors.Is.
var (
	// ErrInvalidOption: an Option was given a value out of range.
	ErrInvalidOption = errors.New("invalid option")
	// ErrInvalidRequest: a generation or scoring request is malformed (empty
	// prompt, token id outside the vocabulary, bad sampling parameter).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrTooLong: prompt plus completion exceed the model's context length.
	ErrTooLong = errors.New("sequence longer than the context")
	// ErrWeights: a checkpoint lacks a tensor the decoder needs, or one has
	// the wrong shape.
	ErrWeights = errors.New("bad weights")
	// ErrBackend: the GoMLX backend could not be created, or a graph failed
	// to build, compile or run (GoMLX panics are turned into this error).
	ErrBackend = errors.New("backend failure")
	// ErrClosed: the Model or Batcher was closed.
	ErrClosed = errors.New("closed")
)
