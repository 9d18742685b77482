# agora-zookeeper:local — built by deploy/build-images.sh, which prepares rootfs/ (the host's JRE
# and its shared libraries, Debian's ZooKeeper jars, busybox for the health check) and fills in
# the classpath. FROM scratch: no registry is needed.
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
EXPOSE 2181
# A small heap (the default is a quarter of the machine) and no perf data file in /tmp.
ENTRYPOINT ["/bin/java", "-Xmx256m", "-XX:-UsePerfData", "-cp", "@CLASSPATH@", "org.apache.zookeeper.server.quorum.QuorumPeerMain"]
CMD ["/conf/zoo.cfg"]
