module quantrollout.io/bench/routertools

go 1.24
