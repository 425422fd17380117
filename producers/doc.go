// Package producers puts work on the bus: dataset ingestion, batch job submission and the HTTP gateway.
package producers
