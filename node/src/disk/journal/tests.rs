use super::*;
use crate::protocol::documents::DocId;
use ride_types::clock::Millis;

/// A document of epoch `epoch` for region 0 alone.
fn part(epoch: u64) -> Part {
    Part {
        epoch,
        scope: Scope::of([0]),
    }
}

#[test]
fn appended_changes_come_back_and_torn_tails_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, loaded) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    assert!(loaded.docs.is_empty());
    journal
        .append(&[(part(7), b"first".to_vec()), (part(8), b"other".to_vec())])
        .unwrap();
    journal.append(&[(part(7), b"-second".to_vec())]).unwrap();
    drop(journal);
    tear_last_write(dir.path());

    let (mut journal, loaded) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(loaded.docs[&part(7)], b"first-second");
    assert_eq!(loaded.docs[&part(8)], b"other");
    let dropped = Dropped {
        docs: [(
            DocId {
                owner: NodeId("peer@1".into()),
                epoch: 3,
                scope: Scope::of([0, 2]),
            },
            Millis(99),
        )]
        .into(),
        floors: [(NodeId("peer@1".into()), 1)].into(),
    };
    journal.save_dropped(&dropped).unwrap();
    journal.append(&[(part(8), b"+more".to_vec())]).unwrap();
    journal.remove(&part(7)).unwrap();
    drop(journal);

    let (_, loaded) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(
        loaded.docs.keys().cloned().collect::<Vec<_>>(),
        vec![part(8)]
    );
    assert_eq!(
        loaded.docs[&part(8)],
        b"other+more",
        "the torn frame was cut, not kept"
    );
    assert_eq!(loaded.dropped, dropped);
}

#[test]
fn accepted_requests_come_back_by_epoch_apart_from_documents() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    journal.append_intake(7, b"a").unwrap();
    journal.append(&[(part(7), b"change".to_vec())]).unwrap();
    journal.append_intake(7, b"b").unwrap();
    journal.append_intake(9, b"c").unwrap();
    let sync = journal.take_sync().expect("appends to sync");
    sync.run().unwrap();
    assert!(journal.is_durable());
    drop(journal);
    tear_last_write(dir.path());

    let (mut journal, loaded) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(loaded.docs[&part(7)], b"change", "torn tail cut");
    assert_eq!(
        loaded.intake,
        [(7, b"ab".to_vec()), (9, b"c".to_vec())].into(),
        "torn tail cut"
    );
    journal.remove_intake_before(9).unwrap();
    drop(journal);

    let (_, loaded) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(loaded.intake, [(9, b"c".to_vec())].into());
    assert_eq!(loaded.docs.len(), 1, "documents are not intake");
}

#[test]
fn the_watermark_passes_an_append_only_once_a_sync_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    assert!(journal.is_durable() && journal.take_sync().is_none());
    journal.append(&[(part(1), b"a".to_vec())]).unwrap();
    let first = journal.take_sync().expect("a write to sync");
    journal.append(&[(part(2), b"b".to_vec())]).unwrap();
    first.run().unwrap();
    assert!(
        !journal.is_durable(),
        "a sync taken before the second append does not cover it"
    );
    let second = journal.take_sync().expect("the second write to sync");
    journal
        .take_sync()
        .expect("both writes to sync")
        .run()
        .unwrap();
    assert!(journal.is_durable());
    second.run().unwrap();
    assert!(journal.is_durable(), "a late sync does not move it back");
}

#[test]
fn a_sync_that_finishes_first_covers_what_a_slower_one_was_taken_for() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    journal.append(&[(part(1), b"a".to_vec())]).unwrap();
    let slow = journal.take_sync().expect("a write to sync");
    journal.append(&[(part(2), b"b".to_vec())]).unwrap();
    let fast = journal.take_sync().expect("the second write to sync");
    let covered: Vec<PathBuf> = fast.files.iter().map(|(path, _)| path.clone()).collect();
    assert_eq!(
        covered,
        vec![dir.path().join("1-0.log"), dir.path().join("2-0.log")],
        "the first file's sync may still be running: the second sync covers it too"
    );
    assert!(fast.dir.is_some(), "both files are new to the directory");
    fast.run().unwrap();
    assert!(journal.is_durable());
    slow.run().unwrap();
    journal.append(&[(part(2), b"c".to_vec())]).unwrap();
    let next = journal.take_sync().expect("the third write to sync");
    assert_eq!(next.files.len(), 1, "durable files are not synced again");
    assert!(next.dir.is_none(), "no file was created since");
}

#[test]
fn a_sync_already_covered_does_not_touch_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    journal.append(&[(part(1), b"a".to_vec())]).unwrap();
    let (first, second) = (journal.take_sync().unwrap(), journal.take_sync().unwrap());
    first.run().unwrap();
    second.run().unwrap();
    assert_eq!(
        journal.syncs(),
        1,
        "the second sync was covered by the first"
    );
    journal.append(&[(part(1), b"b".to_vec())]).unwrap();
    journal.take_sync().unwrap().run().unwrap();
    assert_eq!(journal.syncs(), 2);
}

#[test]
fn syncs_taken_at_once_all_end_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), Durability::Fsync).unwrap();
    let mut threads = Vec::new();
    for i in 0..8_u8 {
        journal
            .append(&[(part(u64::from(i % 3)), vec![i])])
            .unwrap();
        let sync = journal.take_sync().unwrap();
        threads.push(std::thread::spawn(move || sync.run()));
    }
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    assert!(
        journal.is_durable(),
        "every append is covered once all return"
    );
    assert!(journal.take_sync().is_none());
}

#[test]
fn a_corrupt_frame_ends_what_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), Durability::PageCache).unwrap();
    journal.append(&[(part(1), b"good".to_vec())]).unwrap();
    journal.append(&[(part(1), b"flipped".to_vec())]).unwrap();
    drop(journal);
    let path = dir.path().join("1-0.log");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let (_, loaded) = Journal::open(dir.path(), Durability::PageCache).unwrap();
    assert_eq!(loaded.docs[&part(1)], b"good");
}

#[test]
fn an_owner_is_kept_with_its_journal_and_new_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeId("dhaka-north".into());
    let (first, new) = open_owner(dir.path(), &node, &Entropy::Os).unwrap();
    assert!(new);
    assert!(first.0.starts_with("dhaka-north@"), "{first:?}");
    let (again, new) = open_owner(dir.path(), &node, &Entropy::Os).unwrap();
    assert_eq!((again.clone(), new), (first.clone(), false));

    let (mut journal, _) = Journal::open(dir.path(), Durability::PageCache).unwrap();
    journal.append(&[(part(3), b"x".to_vec())]).unwrap();
    fs::remove_file(dir.path().join(OWNER_FILE)).unwrap();
    let (replaced, new) = open_owner(dir.path(), &node, &Entropy::Os).unwrap();
    assert!(new);
    assert_ne!(replaced, first);
    let (_, loaded) = Journal::open(dir.path(), Durability::PageCache).unwrap();
    assert!(
        loaded.docs.is_empty(),
        "a journal without its owner is discarded"
    );
}
