module colony-operator/node/postgres

go 1.22
