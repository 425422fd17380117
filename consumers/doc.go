// Package consumers holds the handlers that the pipeline's consume loop
// calls: the dataset sink, inference and scoring, training and the results
// sink. They meet the producers only on the bus, and share libraries with
// them (routing, serve, dataset/read, storage), never code of their own.
package consumers
