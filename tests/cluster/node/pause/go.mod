module colony-operator/node/pause

go 1.22
