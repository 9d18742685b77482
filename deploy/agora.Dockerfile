# agora:local — built by deploy/build-images.sh, which prepares rootfs/ (the agora binary, its
# shared libraries, busybox, users root and nobody). FROM scratch: no registry is needed.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin RUST_LOG=info
WORKDIR /var/lib/agora
ENTRYPOINT ["/usr/local/bin/agora"]
CMD ["--help"]
