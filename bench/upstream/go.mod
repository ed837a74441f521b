module aigateway.local/bench/upstream

go 1.22
