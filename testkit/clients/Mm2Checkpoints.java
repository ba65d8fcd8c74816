// Reads MirrorMaker 2's checkpoints with MirrorMaker 2's own client code
// (connect-mirror-client), for tests of a checkpoints topic someone else wrote.
// Run as a single-file program against connect-mirror's jars:
//
//   java -cp 'lib/*' Mm2Checkpoints.java translate BOOTSTRAP ALIAS GROUP
//     RemoteClusterUtils.translateOffsets, one line per partition:
//     topic <TAB> partition <TAB> offset <TAB> metadata
//   java -cp 'lib/*' Mm2Checkpoints.java committed BOOTSTRAP GROUP
//     the group's committed offsets (Admin.listConsumerGroupOffsets), as translate prints them
//   java -cp 'lib/*' Mm2Checkpoints.java dump BOOTSTRAP TOPIC
//     every record of the topic's partition 0 through Checkpoint.deserializeRecord:
//     record offset <TAB> group <TAB> topic <TAB> partition <TAB> upstream <TAB> downstream <TAB> metadata

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.connect.mirror.Checkpoint;
import org.apache.kafka.connect.mirror.RemoteClusterUtils;

public class Mm2Checkpoints {
    public static void main(String[] args) throws Exception {
        Map<String, Object> config = new HashMap<>();
        config.put("bootstrap.servers", args[1]);
        switch (args[0]) {
            case "translate" -> print(
                RemoteClusterUtils.translateOffsets(config, args[2], args[3], Duration.ofSeconds(30)));
            case "committed" -> {
                try (Admin admin = Admin.create(config)) {
                    print(admin.listConsumerGroupOffsets(args[2]).partitionsToOffsetAndMetadata().get());
                }
            }
            case "dump" -> dump(config, args[2]);
            default -> throw new IllegalArgumentException("translate, committed or dump, not " + args[0]);
        }
    }

    static void print(Map<TopicPartition, OffsetAndMetadata> offsets) {
        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : offsets.entrySet()) {
            System.out.println(String.join("\t", e.getKey().topic(),
                String.valueOf(e.getKey().partition()), String.valueOf(e.getValue().offset()),
                e.getValue().metadata()));
        }
    }

    static void dump(Map<String, Object> config, String topic) {
        TopicPartition partition = new TopicPartition(topic, 0);
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(config,
                new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.assign(List.of(partition));
            consumer.seekToBeginning(List.of(partition));
            long end = consumer.endOffsets(List.of(partition)).get(partition);
            long deadline = System.currentTimeMillis() + 30_000;
            while (consumer.position(partition) < end) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("no end of " + topic + " within 30 s");
                }
                for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofSeconds(1))) {
                    Checkpoint checkpoint = Checkpoint.deserializeRecord(record);
                    System.out.println(String.join("\t", String.valueOf(record.offset()),
                        checkpoint.consumerGroupId(), checkpoint.topicPartition().topic(),
                        String.valueOf(checkpoint.topicPartition().partition()),
                        String.valueOf(checkpoint.upstreamOffset()),
                        String.valueOf(checkpoint.downstreamOffset()), checkpoint.metadata()));
                }
            }
        }
    }
}
