# meshkit server: a drop-in for the etcd image (same flags, same ETCD_* variables).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY meshkit ./meshkit
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
# etcd's ports: clients, peers.
EXPOSE 2379 2380
ENTRYPOINT ["meshkit", "server"]
