// The KRaft voter set of a local cluster, through Kafka's own Admin client (the jars the local
// broker runs on; the JDK runs this file as it is, no build step). engine/local/kraft.py calls it:
//
//   java -cp 'LIB/*' Quorum.java BOOTSTRAP describe
//       one line per voter:     voter ID DIRECTORY_ID LOG_END_OFFSET
//       then per observer:      observer ID DIRECTORY_ID LOG_END_OFFSET
//       then:                   leader ID HIGH_WATERMARK
//   java -cp 'LIB/*' Quorum.java BOOTSTRAP replace ID DIRECTORY_ID HOST PORT
//       node ID came back with an empty disk, formatted anew (directory DIRECTORY_ID): remove the
//       voter ID of its lost directory, then add ID with its new one (KIP-853). Exit 0 once done.
import java.util.Map;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.clients.admin.RaftVoterEndpoint;
import org.apache.kafka.common.Uuid;

public class Quorum {
    public static void main(String[] args) throws Exception {
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", args[0], "request.timeout.ms", "10000"))) {
            QuorumInfo quorum = admin.describeMetadataQuorum().quorumInfo().get();
            if (args[1].equals("describe")) {
                for (QuorumInfo.ReplicaState voter : quorum.voters()) {
                    System.out.println("voter " + voter.replicaId() + " " + voter.replicaDirectoryId() + " " + voter.logEndOffset());
                }
                for (QuorumInfo.ReplicaState observer : quorum.observers()) {
                    System.out.println("observer " + observer.replicaId() + " " + observer.replicaDirectoryId() + " " + observer.logEndOffset());
                }
                System.out.println("leader " + quorum.leaderId() + " " + quorum.highWatermark());
                return;
            }
            int id = Integer.parseInt(args[2]);
            Uuid directory = Uuid.fromString(args[3]);
            for (QuorumInfo.ReplicaState voter : quorum.voters()) {
                if (voter.replicaId() == id && !voter.replicaDirectoryId().equals(directory)) {
                    admin.removeRaftVoter(id, voter.replicaDirectoryId()).all().get();
                }
            }
            boolean voting = quorum.voters().stream()
                .anyMatch(v -> v.replicaId() == id && v.replicaDirectoryId().equals(directory));
            if (!voting) {
                RaftVoterEndpoint endpoint = new RaftVoterEndpoint("CONTROLLER", args[4], Integer.parseInt(args[5]));
                admin.addRaftVoter(id, directory, Set.of(endpoint)).all().get();
            }
        }
    }
}
