// Package consumers holds the handlers that the pipeline's consume loop calls: the dataset sink, routing, inference, scoring, training and the results sink.
package consumers
