"""Writes data/demo/{train,valid,test}.txt: a small synthetic ESConv-like dataset written for this project.

No ESConv text is used. Each dialogue below is hand-written; lines start with a speaker code:
``U`` = seeker (usr), and for supporter (sys) turns the strategy code (see CODES). The texts are written
naturally and tokenised the MultiESC way by the same function the HF converter uses, so contractions
come out as ``I ' m`` / ``don ' t`` exactly like the real data.

    python data/demo/make_demo.py            # rewrites the three files
"""
from __future__ import annotations

import json
import os
import runpy

runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "_bootstrap.py"))

from src.convert_hf import tokenize_text  # noqa: E402
from src.esconv import parse_dialogue  # noqa: E402
from src.io_utils import atomic_write_text  # noqa: E402

CODES = {
    "Q": "Question",
    "RP": "Restatement or Paraphrasing",
    "RF": "Reflection of feelings",
    "SD": "Self-disclosure",
    "AR": "Affirmation and Reassurance",
    "PS": "Providing Suggestions or Information",
    "GR": "Greeting",
    "OT": "Others",
}

# (split, emotion_type, problem_type, init_intensity, final_intensity, situation, turns)
DIALOGUES = [
    ("train", "anxiety", "job crisis", 5, 3, "I was laid off after six years at my company and I am worried about paying my rent.", """
U: Hi. I lost my job on Friday and I can't stop thinking about it.
Q: I'm sorry to hear that. What happened on Friday?
U: The company cut half of our team. I'd been there six years and they told us in a ten-minute call.
RF: That sounds like a real shock, especially after six years of loyalty. You must feel hurt and a bit betrayed.
U: Exactly. I feel like those years meant nothing to them. And I'm scared about paying rent next month.
RP: So on top of feeling let down, you're worried about money right away.
U: Yes. I have some savings but not much.
PS: It might help to check whether you're entitled to severance or unemployment benefits. Many people don't claim everything they're owed in the first weeks.
"""),
    ("train", "sadness", "breakup with partner", 4, 3, "My girlfriend of three years ended our relationship because she wants to move abroad.", """
GR: Hello, how are you feeling today?
U: Not great, honestly. My girlfriend ended things with me last week.
RF: That must be very painful. Breakups can leave you feeling empty.
U: It does feel empty. We were together for three years and I thought we'd get married.
Q: Did she tell you why she wanted to end it?
U: She said we want different things. She wants to move abroad and I want to stay near my family.
AR: It sounds like neither of you did anything wrong. Wanting different futures is a hard but honest reason.
U: I know, but it still hurts to wake up and not have her messages.
SD: I went through something similar a few years ago. The mornings were the hardest part for me too, and it did get easier with time.
"""),
    ("train", "anxiety", "academic pressure", 4, 2, "My final exams start in two weeks and I feel completely unprepared, especially for statistics.", """
U: I have my final exams in two weeks and I feel like I haven't studied anything.
Q: How many exams do you have, and which one worries you the most?
U: Four exams. Statistics scares me the most, I failed the midterm.
PS: One thing that helps many students is to split the material into small daily goals. Starting with the topics from the midterm could show you quickly where you stand.
U: That makes sense. I think I'll make a plan tonight.
"""),
    ("train", "sadness", "ongoing depression", 4, 2, "I moved to a new city for work and I have no friends here. I spend every evening alone.", """
U: Hey. I moved to a new city for work and I don't know anyone here.
RF: Moving somewhere new on your own can feel really isolating.
U: It does. I go to work, come home, and eat dinner alone every night.
Q: Have you had a chance to meet any of your coworkers outside of work?
U: Not really. Most of them have families and leave right at five.
RP: So the people you see every day are busy with their own lives, and evenings end up quiet and lonely.
U: Yes, that's it. Weekends are even worse.
PS: Some people find friends through clubs or classes, like a running group or a language exchange. Is there a hobby you enjoyed back home?
U: I used to play volleyball. Maybe there's a league here.
AR: That's a great idea. Team sports are one of the easiest ways to meet people, and you already have the skill.
"""),
    ("train", "sadness", "grief", 5, 4, "My old dog died this week and the house feels empty without him.", """
GR: Hi there! What would you like to talk about today?
U: My dog died on Sunday. He was fourteen.
RF: I'm so sorry. Losing a companion you've had for fourteen years is heartbreaking.
U: The house is so quiet now. I keep expecting him at the door.
SD: When my cat passed away I kept filling her water bowl out of habit for weeks. Those little moments are a sign of how much you loved him.
U: Thank you. It helps to know I'm not strange for feeling like this.
"""),
    ("train", "anger", "problems with friends", 4, 2, "My best friend is angry with me because I said I could not afford her birthday trip.", """
U: I had a big fight with my best friend and now she won't answer my texts.
Q: That sounds stressful. What was the fight about?
U: She planned a birthday trip and I said I couldn't afford it. She thinks I just don't want to spend time with her.
RP: So she took your money worries as a sign that you don't care about her.
U: Yes, and that's so unfair because I've always been there for her.
RF: It sounds like you feel misunderstood and hurt that she doubted you.
U: Very hurt. But I'm also angry.
AR: Both feelings make sense. You were being honest about your budget, and that's nothing to be ashamed of.
U: Should I keep texting her or give her space?
PS: Maybe give her a day or two, then send one calm message explaining that the trip was about money, not about her, and suggest something cheaper you could do together.
U: I could offer to cook her a birthday dinner instead.
AR: That's a thoughtful idea. It shows her that you want to celebrate her, just in a way you can manage.
"""),
    ("train", "anger", "job crisis", 4, 3, "My boss keeps giving me more work and I have been staying late every day for a month.", """
U: Hello. I'm so tired of my job. I work late every day and my boss keeps adding more tasks.
RF: It sounds exhausting, like you never get a chance to catch your breath.
U: Exactly. I haven't had a free evening in a month.
Q: Have you been able to tell your boss how much is on your plate?
U: I tried once but he just said everyone is busy.
PS: It might help to write down all your current tasks with rough time estimates and ask him which ones should come first. A list is harder to dismiss than a feeling.
U: I've never tried that. I'll bring a list to our meeting on Monday.
"""),
    ("train", "anger", "conflict with parents", 5, 3, "My parents want me to study medicine but I want to become a graphic designer.", """
GR: Hello, I'm here to listen. How has your day been?
U: Pretty bad. My parents and I argued again about my college major.
Q: What do they want you to study?
U: They want me to do medicine. I want to study graphic design.
RF: It must be frustrating to feel that your own dreams aren't being taken seriously.
U: It is. They say design isn't a real career.
SD: My parents were worried when I chose music, too. It took time, but they came around when they saw how committed I was.
U: How did you convince them?
PS: I showed them some examples of people earning a living in the field and a plan for my first few years. You could put together a small portfolio and some job listings for designers.
U: That's a good idea. My dad likes facts and numbers.
AR: Then you already know how to speak his language. You clearly care about your future, and that will show.
"""),
    ("train", "anxiety", "sleep problems", 4, 3, "Since a new project started at work I cannot fall asleep before three in the morning.", """
U: I can't sleep. I lie awake until three every night.
Q: How long has this been going on?
U: About a month, since I started a new project at work.
RP: So the sleepless nights started around the time your workload changed.
U: Yes, my mind just keeps going over things I need to do.
PS: Some people find it helpful to write a to-do list before bed so their mind doesn't try to hold onto everything. Keeping your phone out of the bedroom can help too.
"""),
    ("train", "sadness", "grief", 5, 3, "My grandmother, who raised me, died last month and I still cry every day.", """
U: My grandmother passed away last month and I still cry every day.
RF: I'm very sorry for your loss. It sounds like she meant a great deal to you.
U: She raised me while my parents worked. She was like a second mother.
RP: So you didn't just lose a grandmother, you lost someone who cared for you every day growing up.
U: Yes. People keep telling me I should be over it by now.
AR: There is no timetable for grief. Crying a month later is completely normal, especially for someone so close.
U: Thank you. I needed to hear that.
Q: Is there someone in your family you can share memories of her with?
U: My cousin. We used to spend summers at her house together.
OT: That sounds like a very special bond.
"""),
    ("train", "fear", "health worries", 4, 2, "Every small headache makes me think I have a serious illness and I keep searching symptoms online.", """
U: I've been worrying about my health a lot lately.
OT: I see. Tell me more if you like.
U: Every small headache makes me think something is seriously wrong.
RF: That must be frightening, feeling on alert about your body all the time.
U: It is. I search my symptoms online and it only gets worse.
SD: I used to do the same thing. Reading about rare diseases at midnight never made me feel calmer.
U: So what did you do?
PS: I made an appointment for a full check-up and agreed with myself not to search symptoms until then. Talking to a doctor gave me real answers instead of guesses.
"""),
    ("train", "anxiety", "financial problems", 4, 3, "My credit card debt keeps growing since I had to pay for car repairs with the card.", """
GR: Hi, nice to meet you. How are you doing?
U: Hi. I'm stressed about money. My credit card debt keeps growing.
Q: Has something changed recently that made it harder to pay it off?
U: My car broke down and I had to pay for repairs with the card.
RF: That sounds overwhelming, especially when it was something you couldn't avoid.
U: I feel stupid for getting into this situation.
AR: You're not stupid. An emergency repair can happen to anyone, and you're already looking for a way out, which takes courage.
U: Thanks. I want to make a plan this weekend.
OT: That sounds like a good use of your weekend.
"""),
    ("train", "shame", "school bullying", 4, 3, "Some kids at school laugh at my clothes and I do not want my parents to get involved.", """
U: Some kids at school keep making fun of my clothes.
RF: That sounds hurtful. Nobody deserves to be laughed at like that.
U: I don't want to tell my parents because they'll go to the school and make it worse.
PS: I understand why you feel that way. Maybe there's a teacher or school counselor you trust who could help quietly, without making a big scene.
"""),
    ("train", "anxiety", "procrastination", 5, 3, "My thesis is due in six weeks and I have written only ten of sixty pages.", """
U: I keep putting off my thesis and now the deadline is close.
Q: How much time do you have left?
U: Six weeks. I've written maybe ten pages out of sixty.
RP: So you need to write about fifty pages in six weeks, and you're worried you won't make it.
U: Yes. Every time I open the file I feel sick and close it again.
RF: It sounds like the thesis has become something you dread, not just a task.
U: That's exactly it. I'm afraid it won't be good enough.
SD: I had the same fear with my own final paper. What helped me was writing a bad first draft on purpose, just to get words down.
U: A bad draft on purpose? That sounds kind of freeing.
AR: It is. You can always improve a bad page, but you can't improve an empty one. Ten pages means you've already started.
U: I'll try to write two messy pages tomorrow morning.
"""),
    ("train", "jealousy", "family issues", 3, 2, "My younger brother got a great job and my parents only talk about him while I am still unemployed.", """
GR: Hello! How can I help you today?
U: I feel jealous of my younger brother and I hate myself for it.
Q: What makes you feel jealous of him?
U: He just got a great job and my parents can't stop talking about it. I'm still looking for work.
RF: It sounds like you feel left behind and maybe a little invisible right now.
U: Yes. I'm happy for him, but I also feel like a failure.
AR: Feeling happy for someone and sad for yourself at the same time is very human. It doesn't make you a bad sibling.
"""),
    ("train", "sadness", "issues with children", 4, 2, "My fifteen-year-old son has stopped talking to me and stays in his room.", """
U: My teenage son barely talks to me anymore.
Q: How old is he?
U: Fifteen. He stays in his room and only comes out for dinner.
OT: Fifteen can be a tricky age.
U: I know, but I miss how close we used to be.
RF: It sounds like you're grieving the closeness you used to share, and you're worried about losing him.
U: Yes. I don't know how to reach him without annoying him.
PS: Some parents find that side-by-side activities work better than face-to-face talks, like driving somewhere together or cooking. Teenagers often open up when the conversation doesn't feel like an interview.
U: He does like to cook. Maybe we could make pizza on Saturday.
AR: That sounds like a lovely plan. Showing up without pressure tells him you're there whenever he's ready to talk.
"""),
    ("train", "nervousness", "job crisis", 5, 3, "I have to present to my whole department tomorrow and my voice shakes when I speak in public.", """
U: I have to give a presentation to the whole department tomorrow and I'm panicking.
RF: That sounds really nerve-racking.
U: My hands shake and my voice goes weird whenever I speak in front of people.
SD: Mine does too! Even after years of practice, I still get shaky before I speak.
U: Really? How do you deal with it?
PS: I practice the first minute many times, because once I get through the start, it gets easier. Slow breathing right before I go on also helps a lot.
"""),
    ("train", "anger", "breakup with partner", 5, 3, "I learned from his friend that my boyfriend cheated on me for months.", """
U: I found out my boyfriend was cheating on me.
RF: I'm so sorry. That must be devastating and infuriating.
U: I'm furious. He lied to my face for months.
Q: How did you find out?
U: His friend told me. Apparently everyone knew except me.
RP: So on top of the betrayal, you feel embarrassed that people around you knew and didn't say anything.
U: Yes! That part makes me feel so stupid.
AR: You trusted someone you loved. That's not stupid at all, that's what a good partner does. He's the one who broke that trust.
U: I know you're right. I'm going to block his number tonight.
"""),
    ("train", "depression", "caring for a family member", 5, 4, "I take care of my mother, who has dementia, on my own and I have not had a day off in months.", """
GR: Hi, how are you today?
U: Tired. My mom has dementia and I'm taking care of her alone.
RF: That sounds like a huge responsibility, and very exhausting.
U: It is. I haven't had a day off in months.
Q: Are there any relatives or services that could help you for a few hours a week?
U: My brother lives far away. I don't know about services.
PS: Many cities have respite care programs, where a trained carer stays with your mom so you can rest. Her doctor or a local carers' association could tell you what's available.
U: I didn't know that existed. I feel guilty about leaving her with a stranger though.
AR: Taking care of yourself is part of taking care of her. You can't pour from an empty cup.
U: That's true. I'll call her doctor tomorrow.
GR: Good luck, and please take care of yourself too. Goodbye!
"""),
    ("train", "depression", "ongoing depression", 4, 2, "I retired last year after forty years as a carpenter and now I feel useless.", """
U: I retired last year and I feel useless now.
RP: So since you stopped working, you've been feeling like you don't have a purpose.
U: Right. I worked for forty years, and now my days are empty.
Q: What did you enjoy most about your work?
U: Teaching the new apprentices. I was a carpenter.
PS: Some community workshops and schools look for experienced volunteers to teach woodworking. It could be a way to keep sharing your skills.
U: I never thought about volunteering. That might be good for me.
AR: Forty years of experience is something valuable. Young people would be lucky to learn from you.
"""),
    ("train", "shame", "appearance", 3, 2, "I gained weight over the winter and now I am embarrassed to go back to the gym.", """
U: Hi there.
GR: Hello! How are you doing today?
U: Not so good. I gained weight during the winter and I'm ashamed to go to the gym now.
RF: It sounds like you feel embarrassed and worried that people will judge you.
U: Yes, I feel like everyone will stare at me.
SD: I felt the same way when I went back to the gym after an injury. To my surprise, most people were focused on their own workouts.
U: That's reassuring. Maybe I'll go early in the morning when it's quiet.
"""),
    ("train", "anger", "problems with friends", 3, 1, "My roommate never cleans up after himself and ignores my hints.", """
U: Hello, is anyone there?
GR: Hi, yes, I'm here. How are you feeling today?
U: Annoyed. My roommate never cleans up after himself.
Q: Have you talked to him about it?
U: I've dropped hints, but he doesn't get them.
PS: It might work better to be direct but friendly. You could suggest a simple cleaning schedule that you both agree on.
U: A schedule could work. He's not a bad guy, just messy.
OT: Sounds like you two can work it out.
"""),
    ("train", "fear", "trauma", 5, 3, "Since a car accident two weeks ago my heart races whenever I sit in a car.", """
U: I was in a car accident two weeks ago and now I'm scared to drive.
AR: I'm glad you're safe. It's completely understandable to feel afraid after something like that.
U: I wasn't hurt badly, but every time I sit in the car my heart races.
Q: Have you been able to talk to anyone about what happened?
U: Only my sister. I don't want to seem weak.
AR: Feeling scared after an accident isn't weakness, it's your body trying to protect you. A doctor or therapist can help you work through it step by step.
"""),
    ("train", "sadness", "problems with friends", 3, 2, "My best friend moved to another country and I miss seeing her every day.", """
GR: Good evening! What's on your mind?
U: My best friend moved to another country and I miss her a lot.
RF: It sounds like you're feeling sad and a little lost without her nearby.
U: Yes, we used to see each other every day.
PS: Maybe you could set up a regular video call, like every Sunday, so you still have something to look forward to.
"""),
    ("train", "guilt", "issues with children", 4, 2, "I yelled at my little daughter this morning after she spilled juice on my papers.", """
U: I yelled at my daughter this morning and I feel terrible.
Q: What happened?
U: She spilled juice all over my work papers and I just snapped.
RP: So it was a stressful moment and you reacted more strongly than you wanted to.
U: Yes. She cried and I felt like the worst mother.
SD: I've lost my temper with my kids too, and I felt awful afterwards. Apologizing to them actually brought us closer.
U: Should I apologize to her tonight?
PS: I think that would be lovely. Telling her you were upset about the papers, not about her, shows her how to fix things after a mistake.
"""),
    ("train", "nervousness", "academic pressure", 3, 2, "I start university next week and I am afraid I will not make any friends.", """
U: I'm starting university next week and I'm nervous about not making friends.
RF: Feeling nervous before such a big change is very natural.
U: Everyone else seems so confident.
AR: A lot of them are probably just as nervous as you, even if they hide it. You'll have plenty of chances to meet people in the first weeks.
"""),
    ("train", "depression", "job crisis", 5, 3, "I have been rejected from ten marketing jobs in a row and I am starting to doubt myself.", """
U: I got rejected from another job today. That's the tenth one.
RF: That sounds so discouraging. Ten rejections would wear anyone down.
U: I'm starting to think there's something wrong with me.
Q: What kind of jobs have you been applying for?
U: Marketing positions. I have a degree and two years of experience.
RP: So you're qualified, but the rejections are making you doubt yourself.
U: Yes. I don't even know what I'm doing wrong.
PS: Sometimes companies will share feedback if you ask politely. It might also help to have a friend look over your CV with fresh eyes.
U: I never asked for feedback. I thought it would be awkward.
SD: I felt the same, but when I finally asked, one recruiter gave me a tip that changed how I wrote my cover letters.
U: OK, I'll email the last company tomorrow.
AR: That's a brave step. The job market is tough right now, and ten rejections say more about that than about you.
U: Thank you, I feel a bit better now.
GR: You're very welcome. Take care of yourself, and good luck!
"""),
    ("train", "shame", "alcohol abuse", 4, 3, "I drank too much at a party and said rude things to my friend's husband.", """
GR: Hi! How are you feeling today?
U: Ashamed, to be honest. I drank too much at a party and embarrassed myself.
Q: Do you want to tell me what happened?
U: I said some rude things to my friend's husband. Everyone saw.
RF: It sounds like you're feeling a lot of regret and worry about what people think of you now.
U: Yes. And it's not the first time I've drunk too much.
PS: Apologizing to your friend and her husband could be a good first step. If drinking keeps causing problems, talking to a doctor or a support group might help you understand why.
U: You're right. I think I need to be honest with myself about it.
"""),
    ("train", "sadness", "problems with friends", 3, 1, "Nobody remembered my birthday yesterday, not even my roommate.", """
U: Nobody remembered my birthday yesterday.
RF: Oh no, that must have felt really lonely.
U: It did. Not even my roommate said anything.
Q: Did you have any plans for the day?
U: No, I was hoping someone would suggest something.
AR: Your feelings are valid. You deserve to be celebrated, and it's okay to tell the people close to you that it matters to you.
"""),
    ("train", "pain", "health problems", 5, 4, "I have had back pain for almost a year, doctors find nothing, and I have stopped seeing my friends.", """
U: Hi. I've had back pain for almost a year and it's making me depressed.
GR: Hello, thank you for reaching out. I'm sorry you've been dealing with that for so long.
U: Thanks. Doctors can't find anything specific.
RF: That must be so frustrating, being in pain without a clear answer.
U: Very. Some days I can't even go for a walk.
Q: How has the pain affected the rest of your life?
U: I stopped seeing friends because I can't sit in a restaurant for long.
RP: So the pain is not only physical, it's also cutting you off from the people you care about.
U: Exactly. I feel like I'm becoming a different person.
SD: I had a long injury a few years ago and I remember feeling like I'd lost myself too.
U: Did it get better?
AR: It did, slowly. And I can hear that you still care about your friends and your walks, which means the person you are is still there.
U: I hope so.
PS: Maybe you could invite a friend to your place instead of a restaurant, so you can move around when you need to. Asking your doctor about a pain specialist could also be worth it.
"""),
    # ---------------------------------------------------------------- valid
    ("valid", "sadness", "breakup with partner", 5, 4, "My wife told me she wants a divorce after months of arguing.", """
U: My wife told me she wants a divorce.
RF: That must have come as a terrible shock.
U: Sort of. We'd been fighting a lot, but I didn't expect this.
Q: How are you coping right now?
U: Not well. I can't focus at work at all.
AR: It makes complete sense that you can't focus. Your whole life is changing, and that takes a lot of energy.
U: What should I do first?
PS: It might help to find a counselor for yourself, and maybe a lawyer to understand your options. You don't have to decide everything this week.
"""),
    ("valid", "shame", "academic pressure", 3, 2, "I failed my driving test for the third time while all my friends passed on the first try.", """
GR: Hello, how are you today?
U: I failed my driving test for the third time.
RF: Oh, that's disappointing. It sounds like you're feeling really discouraged.
U: Yes. My friends all passed on their first try.
SD: It took me three tries as well! I was so nervous that I forgot to check my mirrors.
U: Really? That makes me feel less alone.
AR: You're definitely not alone. Many good drivers needed several attempts. You'll get there.
"""),
    ("valid", "sadness", "ongoing depression", 4, 3, "I am studying abroad and after three months I feel very homesick.", """
U: I'm studying abroad and I feel so homesick.
Q: How long have you been away from home?
U: Three months. I miss my family's cooking and speaking my own language.
RP: So it's the everyday things from home that you miss the most.
U: Yes, the small things.
"""),
    ("valid", "anger", "job crisis", 4, 2, "A coworker presented my idea as his own in a team meeting.", """
U: Hello.
GR: Hi! How are you feeling today?
U: Angry. A coworker took credit for my idea in a meeting.
RF: That's infuriating. You must feel disrespected.
U: I do. I don't know whether to say something.
PS: You could talk to your manager privately and show the notes or emails where you first shared the idea.
"""),
    ("valid", "anxiety", "family issues", 4, 2, "We are moving house next month and I worry that my children will not fit in at their new school.", """
U: We're moving house next month and I can't stop worrying.
OT: Moving is a big event.
U: It's everything, the packing, the new school for my kids, the mortgage.
RP: So there are a lot of changes happening at once, and each one adds to your worry.
U: Exactly. I lie awake making lists.
Q: Which part worries you the most?
U: My kids. I'm scared they won't fit in at the new school.
SD: We moved when my son was eight, and I worried about the same thing. He made a friend in the first week.
U: That gives me hope.
AR: Kids are often more adaptable than we expect, and having a caring parent like you makes a big difference.
"""),
    ("valid", "sadness", "grief", 5, 4, "A friend from school died in an accident a few days before we were supposed to meet.", """
GR: Hi there, how can I help you today?
U: A friend from school died in an accident. I can't believe it.
RF: I'm so sorry. Sudden losses like that can leave you feeling numb and confused.
U: Numb is the right word. We were supposed to meet next week.
Q: Have you been able to talk with other friends who knew him?
U: A few. We're planning to go to the funeral together.
AR: Being together with people who loved him too will help. Take care of yourself in the days ahead.
U: Thank you, I will.
"""),
    ("valid", "fear", "sleep problems", 4, 3, "Since I started my new job I have nightmares about making mistakes and being fired.", """
U: I keep having nightmares since I started my new job.
Q: What are the nightmares about?
U: Mostly about making mistakes and getting fired.
RF: It sounds like the pressure of the new job is following you into your sleep.
"""),
    ("valid", "anxiety", "conflict with parents", 3, 2, "My parents ask me at every family dinner when I will get married.", """
U: My parents keep asking when I'm going to get married.
RP: So you feel pressured by your parents about marriage.
U: Yes, every family dinner turns into the same conversation.
Q: How do you feel about marriage yourself?
U: I want it someday, but I'm focused on my career right now.
AR: That's a perfectly valid choice. Your timeline is yours to decide.
U: I just don't know how to tell them without starting a fight.
PS: You could pick a calm moment and tell them you understand they care, but that you'll share news when there's something to share.
U: I'll try that this weekend.
"""),
    # ---------------------------------------------------------------- test
    ("test", "sadness", "problems with friends", 4, 3, "My best friend is getting married and I found out on social media that I was not invited.", """
U: My best friend is getting married and I wasn't invited.
RF: Oh, that must really hurt.
U: It does. I found out from social media.
RP: So you not only weren't invited, you had to learn about it from a post.
U: Yes, I feel so stupid.
Q: Have you had a chance to ask her why?
"""),
    ("test", "anxiety", "family issues", 5, 3, "I am alone with my newborn daughter most nights because my partner works night shifts.", """
GR: Hello, what brings you here today?
U: I'm stressed about my new baby. I don't sleep anymore.
RF: That sounds exhausting. The first months with a baby are really hard.
U: My partner works nights, so I'm alone with her most of the time.
Q: Do you have any family nearby?
U: My mother lives an hour away, but I don't want to bother her.
RP: So you could ask your mother for help, but you're worried about being a burden to her.
"""),
    ("test", "shame", "job crisis", 4, 3, "My manager called my report sloppy in front of the whole team.", """
U: My manager criticized my report in front of everyone.
Q: What did she say?
U: That it was sloppy and that she expected better from me.
RF: That must have been embarrassing and hurtful, especially in front of your colleagues.
U: It was. I wanted to disappear.
"""),
    ("test", "nervousness", "school transition", 4, 2, "I am starting tenth grade at a new school where I do not know anyone.", """
U: I'm nervous about my first day at a new school.
Q: What grade are you starting?
U: Tenth grade. I don't know anyone there.
RF: Starting somewhere without any familiar faces can feel scary.
U: I'm worried I'll eat lunch alone.
PS: Joining a club in the first week is a good way to meet people who like the same things as you.
U: Did you ever change schools?
SD: Yes, I changed schools when I was fourteen. The first week was hard, but I met my best friend in the chess club.
"""),
    ("test", "sadness", "academic pressure", 4, 2, "I was rejected by my first-choice university and only got into my second choice.", """
GR: Hi, how are you?
U: Not good. I didn't get into the university I wanted.
RF: I'm sorry, that sounds really disappointing.
U: I worked so hard for it.
Q: Did you get accepted anywhere else?
U: Yes, at my second choice, but it feels like a failure.
OT: I understand.
U: Everyone expected me to get into the first one.
AR: Getting into your second choice is still a real achievement. Your hard work got you there, and what you do there matters more than the name.
"""),
    ("test", "anxiety", "procrastination", 3, 2, "I check my phone hundreds of times a day and stay up late scrolling.", """
U: I think I'm addicted to my phone.
Q: What makes you feel that way?
U: I check it hundreds of times a day and I stay up late scrolling.
RP: So it's taking time from your sleep and you feel it's out of your control.
U: Yes. I feel anxious if it's not next to me.
RF: That sounds stressful, feeling like you need it with you all the time.
U: I want to change but I don't know where to start.
AR: Noticing the problem is already a big step.
U: Thanks. Any ideas?
PS: You could start small, like leaving your phone outside the bedroom at night and turning off notifications for social media apps.
"""),
    ("test", "anxiety", "conflict with parents", 2, 1, "Yesterday's talk helped me and I spoke to my sister about my worries as suggested.", """
U: I just wanted to say thanks for yesterday, talking helped me a lot.
Q: I'm glad to hear that! How are you feeling today?
U: Much calmer. I talked to my sister like you suggested. I have to go now.
GR: That's wonderful. Take care, and have a good evening!
"""),
    ("test", "anxiety", "financial problems", 4, 3, "My cat is sick and the vet bills are more than I can afford.", """
U: My cat has been sick and the vet bills are huge.
RF: That sounds worrying, both for your cat and for your wallet.
U: Yes, I love her but I can't keep paying this much.
PS: Some vets offer payment plans, and there are charities that help with pet medical costs. It may be worth asking.
U: I'll ask at her next appointment. Anyway, she's sleeping next to me now.
OT: Aw, that sounds cozy.
U: She is. It makes me feel a bit better.
"""),
]


def build(spec) -> dict:
    split, emotion, problem, init, final, situation, body = spec
    dialog = []
    for raw in body.strip().splitlines():
        code, _, text = raw.partition(":")
        code = code.strip()
        if code == "U":
            dialog.append({"text": tokenize_text(text), "speaker": "usr"})
        else:
            dialog.append({"text": tokenize_text(text), "speaker": "sys", "strategy": CODES[code]})
    return {"emotion_type": emotion, "problem_type": problem, "situation": situation,
            "init_intensity": init, "final_intensity": final, "dialog": dialog}


def main(out_dir: str = os.path.dirname(os.path.abspath(__file__))) -> None:
    for split in ("train", "valid", "test"):
        lines = []
        for spec in DIALOGUES:
            if spec[0] != split:
                continue
            obj = build(spec)
            # same validation as every consumer (alternation, labels, non-empty text)
            parse_dialogue(obj, f"{split} demo", len(lines) + 1, len(lines))
            if not 4 <= len(obj["dialog"]) <= 14:
                raise ValueError(f"{split} dialogue {len(lines)}: {len(obj['dialog'])} turns, expected 4-14")
            lines.append(json.dumps(obj, ensure_ascii=False))
        atomic_write_text(os.path.join(out_dir, f"{split}.txt"), "\n".join(lines) + "\n")
        print(f"{split}: {len(lines)} dialogues")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=os.path.dirname(os.path.abspath(__file__)),
                        help="where train/valid/test.txt go (default: this folder, i.e. rewrite the bundled files)")
    main(parser.parse_args().output_dir)
