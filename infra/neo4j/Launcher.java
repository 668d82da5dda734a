// Neo4j Community, embedded, with Bolt on a loopback port. Run as a single-file program:
//   java -cp '<libs>/*' Launcher.java DATA_DIR PORT
// Prints "NEO4J READY bolt://127.0.0.1:PORT" once the default database answers, and shuts
// the database down cleanly on SIGTERM (the JVM's shutdown hook). Data stays in DATA_DIR.
import java.nio.file.Path;
import java.time.Duration;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;

public class Launcher {
    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(dir)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.transaction_timeout, Duration.ofSeconds(60))
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(dbms::shutdown));
        GraphDatabaseService db = dbms.database("neo4j");
        long deadline = System.currentTimeMillis() + 120_000;
        while (!db.isAvailable(1000)) {
            if (System.currentTimeMillis() > deadline) {
                System.err.println("NEO4J FAILED: database not available");
                System.exit(3);
            }
        }
        System.out.println("NEO4J READY bolt://127.0.0.1:" + port);
        System.out.flush();
        Thread.currentThread().join();
    }
}
